"""`orderflow keys new`: a key on stdout alone, once; its entry in the key file (created 0600,
replaced whole); a name twice, or a file that does not load, refused with exit 2 and nothing
written. In process: the command is argparse and a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orderflow import auth
from orderflow_tools.cli import main


def test_a_new_key_goes_to_stdout_and_its_hash_into_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "api-keys.json"
    assert (
        main(
            ["keys", "new", "shop", "--scope", "orders:write", "--scope", "orders:read", "--file", str(path)]
        )
        == 0
    )
    out, err = capsys.readouterr()
    key = out.strip()
    assert out == key + "\n" and key not in err and "shown only now" in err
    assert path.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "new", "ops", "--scope", "admin", "--file", str(path)]) == 0
    ops = capsys.readouterr().out.strip()
    keys, _ = auth.read_keys(str(path))
    shop, admin = keys.identify(b"Bearer " + key.encode()), keys.identify(b"Bearer " + ops.encode())
    assert shop is not None and shop.name == "shop" and shop.scopes == {auth.WRITE, auth.READ}
    assert admin is not None and admin.admin
    assert key not in path.read_text() and ops not in path.read_text()


def test_a_name_twice_or_a_broken_file_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "api-keys.json"
    assert main(["keys", "new", "shop", "--scope", "admin", "--file", str(path)]) == 0
    before = path.read_bytes()
    assert main(["keys", "new", "shop", "--scope", "admin", "--file", str(path)]) == 2
    assert "a key named 'shop' is already there" in capsys.readouterr().err
    assert path.read_bytes() == before
    path.write_text('{"keys": [')
    assert main(["keys", "new", "ops", "--scope", "admin", "--file", str(path)]) == 2
    assert "not adding to a file that does not load" in capsys.readouterr().err
    assert main(["keys", "new", "bad name", "--scope", "admin"]) == 2


def test_without_a_file_the_entry_is_printed_to_add_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "shop", "--scope", "orders:write"]) == 0
    out, err = capsys.readouterr()
    entry = json.loads(err.split("add this entry to the key file: ", 1)[1].splitlines()[0])
    assert entry == auth.entry("shop", ["orders:write"], out.strip())
    with pytest.raises(SystemExit):
        main(["keys", "new", "shop", "--scope", "orders:delete"])  # argparse names the choices
