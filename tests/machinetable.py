"""The state machines' docstring tables, read and held against the machines Automat builds.

``linkstate.py`` and ``terminal/lifecycle.py`` each document their machine as a
table in their docstring; these helpers let a test check that the table a reader
sees is the machine that runs, row for row.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

Row = tuple[str, str, str, str]


def documented(module: ModuleType) -> set[Row]:
    """The rows of ``module``'s docstring table: (state, input, next, output)."""
    lines = (module.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    assert len(rules) == 3
    rows = set()
    for line in lines[rules[1] + 1 : rules[2]]:
        m = re.match(r"(\w+) +(\w+) +(\w+) +(\w+)", line)
        if m:  # else a row's text going on
            state, symbol, new, what = m.groups()
            rows.add((state, symbol, new, "returns(None)" if what == "nothing" else what))
    return rows


def built(machine: Any) -> set[Row]:
    """The rows of the machine Automat built for ``machine`` (a ``TypeMachineBuilder`` build)."""
    automaton = machine.__automat_automaton__
    return {
        (old.name, symbol, new.name, "+".join(o.name for o in outputs))
        for old, symbol, new, outputs in automaton.allTransitions()
    }


def assert_table_is_machine(
    module: ModuleType, machine: Any, states: set[str], inputs: set[str]
) -> set[Row]:
    """The docstring's table is the machine's, and every state answers every input (a late or
    repeated report is never ``NoTransition``). Returns the rows."""
    rows = documented(module)
    assert built(machine) == rows
    automaton = machine.__automat_automaton__
    assert {s.name for s in automaton.states()} == states
    assert automaton.inputAlphabet() == inputs
    assert {(s, i) for s, i, _, _ in rows} == {(s, i) for s in states for i in inputs}
    assert len(rows) == len(states) * len(inputs)
    return rows
