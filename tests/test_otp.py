"""The second factor (TOTP) without sockets: the store's records, ``otp`` and the login
dialogue on a fake clock, codes made by pyotp for the clock's time (``at``)."""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest
from harness import Client, add_user, make_server, online

from shellserver.app.assembly import Assembly
from shellserver.shell.secondfactor import qr_text
from shellserver.store.otp import (
    RECOVERY_CODES,
    RECOVERY_COST,
    STEP,
    Verdict,
    matching_step,
    new_recovery_codes,
    normal_code,
    provisioning_uri,
    time_step,
)

#: A moment well after the epoch (the harness's clock starts at 0).
T0 = 1_800_000_000.0


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path)
    srv.clock.advance(T0)  # type: ignore[attr-defined]
    add_user(srv, "alice")
    add_user(srv, "bob")
    add_user(srv, "root1", admin=True)
    return srv


def now(server: Assembly) -> float:
    return server.clock.seconds()


def secret_of(out: str) -> str:
    uri = re.search(r"otpauth://\S+", out)
    assert uri is not None, out
    found = re.search(r"secret=([A-Z2-7]+)", uri.group(0))
    assert found is not None
    return found.group(1)


def enable(server: Assembly, c: Client) -> tuple[str, list[str]]:
    """``otp enable`` answered with the right code; the secret and the recovery codes."""
    out = c.run("otp enable")
    assert out.endswith("Verification code: ")
    secret = secret_of(out)
    out = c.run(pyotp.TOTP(secret).at(now(server)))
    assert "Second factor enabled" in out, out
    codes = re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})$", out, re.M)
    assert len(codes) == RECOVERY_CODES
    return secret, codes


def next_step(server: Assembly) -> None:
    """On to the next time step: the code of the last one was used."""
    server.clock.advance(STEP)  # type: ignore[attr-defined]


def login_with_code(server: Assembly, code: str, peer: str = "10.0.0.2") -> tuple[Client, str]:
    c = Client(server, peer=peer)
    c.output()
    c.send("alice")
    c.send("password1")
    asked = c.output()
    assert asked.endswith("Verification code: "), asked
    c.send(code)
    server.clock.advance(5)  # type: ignore[attr-defined]  # a failure's delay
    return c, c.output()


# -- the records ---------------------------------------------------------------------------


def test_a_code_matches_its_step_and_the_steps_either_side_only() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    for offset in (-1, 0, 1):
        code = totp.at(T0, counter_offset=offset)
        assert matching_step(secret, code, T0) == time_step(T0) + offset
    assert matching_step(secret, totp.at(T0 + 2 * STEP), T0) is None
    assert matching_step(secret, "000000", 0.0) in (None, 0, 1)  # no error at the epoch


def test_recovery_codes_are_random_and_typed_loosely() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == RECOVERY_CODES
    assert normal_code(" " + codes[0].upper().replace("-", " - ") + " ") == codes[0].replace(
        "-", ""
    )
    assert len(normal_code("x" * 10_000)) == 64  # bounded


def test_the_uri_names_issuer_and_account() -> None:
    uri = provisioning_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "alice", "testhost")
    assert uri.startswith("otpauth://totp/testhost:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    assert "issuer=testhost" in uri


def test_the_qr_code_fits_80_columns_in_half_blocks() -> None:
    text = qr_text(provisioning_uri(pyotp.random_base32(), "a" * 32, "h" * 40))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 40
    assert set(text) <= set(" ▀▄█\n")


def test_a_code_is_accepted_once_and_an_older_one_after_a_newer_never(
    server: Assembly,
) -> None:
    otp = server.second_factor.otp
    secret = pyotp.random_base32()
    step = time_step(T0) - 5
    assert otp.enable("alice", secret, step, [], T0).result is True
    totp = pyotp.TOTP(secret)
    code = totp.at(T0)
    assert otp.verify("alice", code, T0).result is Verdict.OK
    assert otp.verify("alice", code, T0).result is Verdict.REPLAYED
    assert otp.verify("alice", code, T0 + STEP).result is Verdict.REPLAYED  # still in window
    later = totp.at(T0, counter_offset=1)
    assert otp.verify("alice", later, T0).result is Verdict.OK
    earlier = totp.at(T0, counter_offset=-1)
    assert otp.verify("alice", earlier, T0).result is Verdict.REPLAYED
    assert otp.verify("alice", "12345", T0).result is Verdict.WRONG
    assert otp.verify("bob", code, T0).result is Verdict.NOT_ENABLED
    assert otp.enable("alice", secret, step, [], T0).result is False  # one at a time


def test_recovery_codes_are_hashed_on_the_hashing_pool_and_work_once(
    server: Assembly,
) -> None:
    otp = server.second_factor.otp
    hashed: list[str] = []
    run_hash = otp.run_hash

    def counting(f, *args):  # type: ignore[no-untyped-def]
        hashed.append(f.__name__)
        return run_hash(f, *args)

    otp.run_hash = counting
    codes = new_recovery_codes()
    otp.enable("alice", pyotp.random_base32(), 0, codes, T0)
    assert hashed == ["hash_codes"]
    rows = otp.db.recovery_hashes("alice")
    assert len(rows) == RECOVERY_CODES
    assert all(h.startswith("$scrypt$") and codes[0] not in h for _, h in rows)
    otp.hash_cost = 14  # the server's cost: recovery codes stay at most at RECOVERY_COST
    otp.enable("bob", pyotp.random_base32(), 0, codes[:1], T0)
    assert otp.db.recovery_hashes("bob")[0][1].startswith(f"$scrypt$ln={RECOVERY_COST},")
    assert otp.verify("alice", codes[3].upper(), T0).result is Verdict.RECOVERY
    assert hashed[-1] == "find_code"
    assert otp.verify("alice", codes[3], T0).result is Verdict.WRONG
    assert otp.status("alice").result.recovery_left == RECOVERY_CODES - 1


def test_deleting_the_account_deletes_its_second_factor(server: Assembly) -> None:
    otp = server.second_factor.otp
    otp.enable("bob", pyotp.random_base32(), 0, new_recovery_codes(), T0)
    server.store.delete("bob")
    conn = server.store.db._db
    assert conn.execute("SELECT count(*) FROM otp").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM otp_recovery").fetchone()[0] == 0


# -- otp enable, status, disable, reset ----------------------------------------------------


def test_enable_shows_uri_and_qr_confirms_and_prints_recovery_codes(server: Assembly) -> None:
    c = online(server, "alice")
    assert c.run("otp status").startswith("otp: second factor not enabled\n")
    out = c.run("otp enable")
    assert "otpauth://totp/testhost:alice?secret=" in out
    assert "▀" in out or "▄" in out  # the QR code, through the session's output
    assert "Verification code: " in out
    secret = secret_of(out)
    wrong = "123456" if pyotp.TOTP(secret).at(T0) != "123456" else "654321"
    assert c.run(wrong).lstrip("\n").startswith("otp: wrong code")
    out = c.run(pyotp.TOTP(secret).at(now(server)))
    assert "Second factor enabled" in out and out.endswith("alice@testhost:~$ ")
    assert "10 recovery code(s) left" in c.run("otp status")
    assert "already enabled" in c.run("otp enable")


def test_enable_refused_by_an_empty_line_stores_nothing(server: Assembly) -> None:
    c = online(server, "alice")
    c.run("otp enable")
    out = c.run("")
    assert "otp: second factor not enabled" in out
    assert server.second_factor.otp.enabled("alice").result is False


def test_disable_needs_a_code(server: Assembly) -> None:
    c = online(server, "alice")
    secret, _ = enable(server, c)
    c.run("otp disable")
    out = c.run("000000" if pyotp.TOTP(secret).at(now(server)) != "000000" else "111111")
    server.clock.advance(1)  # type: ignore[attr-defined]
    assert "otp: wrong code; second factor still enabled" in out + c.output()
    next_step(server)
    c.run("otp disable")
    out = c.run(pyotp.TOTP(secret).at(now(server)))
    assert "otp: second factor disabled" in out
    assert server.second_factor.otp.enabled("alice").result is False


def test_disable_takes_a_recovery_code(server: Assembly) -> None:
    c = online(server, "alice")
    _, codes = enable(server, c)
    c.run("otp disable")
    out = c.run(codes[0])
    assert "recovery code was used" in out and "second factor disabled" in out


def test_reset_is_an_administrators_and_logged(server: Assembly) -> None:
    a = online(server, "alice")
    enable(server, a)
    assert "otp: reset: permission denied" in online(server, "bob").run("otp reset alice")
    root = online(server, "root1", peer="10.0.0.9")
    assert "otp: second factor of alice removed" in root.run("otp reset alice")
    assert server.second_factor.otp.enabled("alice").result is False
    assert "otp: reset: alice has no second factor" in root.run("otp reset alice")
    assert "no such user" in root.run("otp reset Bad/Name")
    assert root.run("otp reset").startswith("Usage: ") or "Usage:" in root.run("otp reset")


# -- the login --------------------------------------------------------------------------------


def test_a_password_login_then_asks_for_the_code(server: Assembly) -> None:
    c = online(server, "alice")
    secret, _ = enable(server, c)
    next_step(server)
    _, out = login_with_code(server, pyotp.TOTP(secret).at(now(server)))
    assert out.endswith("alice@testhost:~$ "), out


def test_a_wrong_code_is_a_failed_login(server: Assembly) -> None:
    c = online(server, "alice")
    secret, _ = enable(server, c)
    next_step(server)
    right = pyotp.TOTP(secret).at(now(server))
    wrong = "000000" if right != "000000" else "111111"
    failed = server.failed_logins._failures
    before = failed.count("10.0.0.2", now(server))
    d, out = login_with_code(server, wrong)
    assert out.lstrip("\n").startswith("Login incorrect\n") and out.endswith("login: ")
    assert failed.count("10.0.0.2", now(server)) == before + 1
    assert server.account_pacing._failures.count("alice", now(server)) == 1
    # Back at login:, the password is asked again before another code.
    d.send("alice")
    d.send("password1")
    assert d.output().endswith("Verification code: ")


def test_a_replayed_code_is_refused(server: Assembly) -> None:
    c = online(server, "alice")
    secret, _ = enable(server, c)
    next_step(server)
    code = pyotp.TOTP(secret).at(now(server))
    _, out = login_with_code(server, code)
    assert out.endswith("alice@testhost:~$ ")
    _, out = login_with_code(server, code, peer="10.0.0.3")
    assert out.lstrip("\n").startswith("Login incorrect\n")
    assert server.failed_logins._failures.count("10.0.0.3", now(server)) == 1


def test_a_recovery_code_logs_in_once(server: Assembly) -> None:
    c = online(server, "alice")
    _, codes = enable(server, c)
    _, out = login_with_code(server, codes[5])
    assert out.endswith("alice@testhost:~$ ")
    _, out = login_with_code(server, codes[5], peer="10.0.0.3")
    assert out.lstrip("\n").startswith("Login incorrect\n")


def test_without_a_second_factor_no_code_is_asked(server: Assembly) -> None:
    out = Client(server).login("bob")
    assert "Verification code" not in out and out.endswith("bob@testhost:~$ ")


# -- --require-otp ----------------------------------------------------------------------------


@pytest.fixture
def strict(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path, require_otp="admin")
    srv.clock.advance(T0)  # type: ignore[attr-defined]
    add_user(srv, "alice")
    add_user(srv, "root1", admin=True)
    return srv


def test_require_otp_admin_enrols_an_admin_before_the_prompt(strict: Assembly) -> None:
    c = Client(strict)
    c.output()
    out = c.login("root1")
    assert "This account must use a second factor" in out
    assert out.endswith("Verification code: ") and "root1@testhost" not in out
    out = c.run(pyotp.TOTP(secret_of(out)).at(now(strict)))
    assert "Second factor enabled" in out and out.endswith("root1@testhost:~$ ")
    # Users are not asked; the admin's next login asks for a code instead.
    assert Client(strict, peer="10.0.0.5").login("alice").endswith("alice@testhost:~$ ")
    d = Client(strict, peer="10.0.0.6")
    assert d.login("root1").endswith("Verification code: ")


def test_require_otp_refused_ends_the_session(strict: Assembly) -> None:
    c = Client(strict)
    c.login("root1")
    out = c.run("")
    assert "logging out" in out
    assert c.disconnecting
    assert strict.second_factor.otp.enabled("root1").result is False


def test_require_otp_all_enrols_users_too(tmp_path: Path) -> None:
    srv = make_server(tmp_path, require_otp="all")
    srv.clock.advance(T0)  # type: ignore[attr-defined]
    add_user(srv, "alice")
    out = Client(srv).login("alice")
    assert "This account must use a second factor" in out
    assert out.endswith("Verification code: ")


def test_the_option_takes_none_admin_or_all() -> None:
    from twisted.python.usage import UsageError

    from shellserver.app.tap import Options

    options = Options()
    options.parseOptions([])
    assert options.config.require_otp == "none"
    options = Options()
    options.parseOptions(["--require-otp", "admin"])
    assert options.config.require_otp == "admin"
    with pytest.raises(UsageError, match="require-otp"):
        Options().parseOptions(["--require-otp", "everyone"])


def test_a_session_dropped_while_enrolling_is_not_resumed_into_a_prompt(tmp_path: Path) -> None:
    srv = make_server(tmp_path, require_otp="admin", linger=300)
    srv.clock.advance(T0)  # type: ignore[attr-defined]
    add_user(srv, "root1", admin=True)
    first = Client(srv)
    assert first.login("root1").endswith("Verification code: ")
    first.drop()  # the client went while the enable steps waited for a code
    again = Client(srv, peer="10.0.0.7")
    out = again.login("root1")
    assert "Resume it?" not in out and "This account must use a second factor" in out
    assert out.endswith("Verification code: ")
