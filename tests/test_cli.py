"""The command line, run as a subprocess exactly as a user runs it."""
import json
import os
import subprocess
import sys

import pytest

from refnet import cli


def run(*args, timeout=300, columns=None):
    env = dict(os.environ)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "refnet", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_table():
    """`refnet claims --quick` under COLUMNS=100, serially and on two worker processes."""
    return run("claims", "--quick", columns=100), run("claims", "--quick", "--workers", "2",
                                                      columns=100)


def test_claims_table_printed_once_fitting_100_columns(quick_table):
    from refnet.claims import all_claims

    p = quick_table[0]
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    n = len(all_claims())
    assert lines[0] == f"refnet claims: checking {n} claims on their quick cases"
    too_wide = [ln for ln in lines if len(ln) > 100]
    assert not too_wide, too_wide
    assert sum(ln.split()[:1] == ["claim"] for ln in lines) == 1          # one header
    for name in all_claims():                                              # one row each
        assert sum(ln.split()[:1] == [name] for ln in lines) == 1, name
    assert lines[-1].startswith(f"{n} of {n} claims hold") and "quick cases" in lines[-1]
    assert len(lines) == n + 5                        # opening, header, rule, rows, blank, sum


def test_claims_progress_a_line_per_claim_on_stderr(quick_table):
    from refnet.claims import all_claims

    err = quick_table[0].stderr.splitlines()
    names = list(all_claims())
    assert len(err) == len(names)
    for i, (line, name) in enumerate(zip(err, names), 1):
        assert line.startswith(f"[{i:{len(str(len(names)))}d}/{len(names)}] ok ") and f" {name} (" in line, line


def test_claims_on_workers_print_the_serial_output(quick_table):
    serial, pooled = quick_table
    assert pooled.returncode == 0, pooled.stderr
    a, b = serial.stdout.splitlines(), pooled.stdout.splitlines()
    assert a[:-1] == b[:-1]                              # only the timing may differ
    assert a[-1].rsplit(",", 1)[0] == b[-1].rsplit(",", 1)[0]
    names = sorted(ln.split()[-3] for ln in serial.stderr.splitlines())   # any order
    assert sorted(ln.split()[-3] for ln in pooled.stderr.splitlines()) == names


def test_claims_progress_is_one_updating_line_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli.main(["claims", "--quick", "--only", "derivatives"]) == 0
    out, err = capsys.readouterr()
    assert "\n" not in err and err.count("\r\x1b[K") == 5 + 1 and err.endswith("\r\x1b[K")
    assert "[5/5] ok   taylor_remainder_order_two" in err and "\x1b" not in out
    assert cli.main(["claims", "--quick", "--only", "adjoint_identity", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_claims_verbose_wraps_sources_to_columns(capsys, monkeypatch):
    from refnet.claims import all_claims

    monkeypatch.setenv("COLUMNS", "60")
    assert cli.main(["claims", "--quick", "--only", "derivatives", "--verbose", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert max(len(ln) for ln in out.splitlines()) <= 60
    src = all_claims()["backprop_matches_fd"].source
    assert " ".join(out.split()).count(src) == 1
    assert cli.main(["claims", "--quick", "--only", "derivatives", "--quiet"]) == 0
    assert "Rumelhart" not in capsys.readouterr().out and "Rumelhart" in src   # no -v


@pytest.mark.parametrize("columns", [100, 60])
def test_claims_list_fits_columns(capsys, monkeypatch, columns):
    from refnet.claims import all_claims

    monkeypatch.setenv("COLUMNS", str(columns))
    assert cli.main(["claims", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(ln) for ln in lines) <= columns
    assert sum(ln.startswith(("backprop_matches_fd ", "backprop_matches_fd\n")) for ln in lines) == 1
    assert len([ln for ln in lines if not ln.startswith(" ")]) >= len(all_claims())


def test_claims_workers_must_be_a_positive_int(capsys):
    for bad in ("0", "-2", "two"):
        assert cli.main(["claims", "--workers", bad]) == 2
        err = capsys.readouterr().err
        assert "--workers" in err and "expected an int >= 1" in err and bad in err
        assert len(err.strip().splitlines()) == 1


def test_version_and_no_command():
    from importlib.metadata import version

    import refnet
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() in (f"refnet {version('refnet')}",
                                                      f"refnet {refnet.__version__}")
    p = run()
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.startswith("refnet: error: missing COMMAND") and "claims" in p.stderr


def test_claims_quick_json_all_hold():
    """`refnet claims --quick --json`: every registered claim holds on its quick cases (on two
    workers, to keep the suite short; the table tests check workers print the serial output)."""
    p = run("claims", "--quick", "--json", "--workers", "2")
    out = json.loads(p.stdout)
    failed = [c for c in out["claims"] if not c["holds"]]
    assert p.returncode == 0 and out["all_hold"], failed
    assert len(out["claims"]) >= 5
    for c in out["claims"]:
        assert c["cases_run"] > 0 and c["worst_value"] <= c["worst_bound"], c


def test_claims_table_and_only():
    p = run("claims", "--quick", "--only", "adjoint_identity")
    assert p.returncode == 0, p.stderr
    assert "adjoint_identity" in p.stdout and "1 of 1 claims hold" in p.stdout


def test_claims_unknown_name_is_a_clear_error():
    p = run("claims", "--only", "no_such_claim")
    assert p.returncode == 2
    assert "no_such_claim" in p.stderr and "Traceback" not in p.stderr


def test_claims_list():
    p = run("claims", "--list")
    assert p.returncode == 0 and "backprop_matches_fd" in p.stdout


def test_run_claims_reports_a_failing_claim(monkeypatch):
    """A claim that does not hold makes the run fail (the table can say NO)."""
    from refnet import claims
    from refnet.claims import Check, claim, run_claims

    claims.all_claims()
    name = "_test_always_fails"
    claim(name, source="test", statement="fails", cases=lambda q: [1])(lambda c: Check(2.0, 1.0))
    try:
        (r,) = run_claims(quick=True, names=[name])
        assert not r.holds and r.worst_value == 2.0
    finally:
        claims._REGISTRY.pop(name)
