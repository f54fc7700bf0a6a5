"""The command line, run as a subprocess exactly as a user runs it."""
import json
import subprocess
import sys



def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "refnet", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_claims_quick_json_all_hold():
    """`refnet claims --quick --json`: every registered claim holds on its quick cases."""
    p = run("claims", "--quick", "--json")
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
