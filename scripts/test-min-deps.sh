#!/usr/bin/env bash
# `make test-min-deps`: install the floor of every dependency pyproject.toml names (each
# `>=X` as `==X`) in a venv of its own, .venv-min-deps, and run the unit tests there; as root
# also the HTTP abuse tests, the tripwire for exporter/http/uvicorn_compat.py. Opt-in (it
# downloads old releases, ~1 min): not a step of .ci/run.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
VENV=.venv-min-deps

# The venv sees Debian's site-packages (bcc imports only from there, for the kernel tests);
# what pip installs in it comes first.
[[ -x $VENV/bin/python ]] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
/usr/bin/python3 - >"$VENV/floors.txt" <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"]:
    name, floor = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", requirement).groups()
    print(f"{name}=={floor}")
PY
echo "test-min-deps: $(tr '\n' ' ' <"$VENV/floors.txt")"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$VENV/floors.txt" -e '.[test]' \
    -c "$VENV/floors.txt"
tests=(tests/unit)
if [[ $(id -u) -eq 0 ]]; then
    tests+=(tests/fault/test_http_abuse.py tests/fault/test_http_bounds.py
        tests/kernel/test_web_security.py)
fi
"$VENV/bin/python" -m pytest -q "${tests[@]}"
