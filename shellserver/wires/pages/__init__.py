"""Personal pages: each user's ``~/public_html`` served at ``/~USER/`` on an origin of its own."""
