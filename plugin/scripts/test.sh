#!/usr/bin/env bash
# Install what the tests need and run every test. `.ci/run` runs exactly this.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export TCP_NODELAY=1  # Debian's DCMTK waits on delayed ACKs without it (about 40 ms per message)

install_debian_packages "$DEBIAN_PACKAGES $TEST_DEBIAN_PACKAGES"
build_venv "[test]"
cd "$REPO"
# The linter first ([tool.ruff] in pyproject.toml): a finding fails the run like a failed test.
"$VENV/bin/ruff" check plugin tests bench
# The type checker, strict on the engine ([tool.mypy] in pyproject.toml).
(cd plugin && "$VENV/bin/mypy" --config-file "$REPO/pyproject.toml" --strict coercion/engine)
# pytest exits 5 when no test ran: with `set -e` that is a failure, as it must be.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
