"""The Orthanc that sites run: Debian 13 (Orthanc 1.12.7, orthanc-python 5.0, Python 3.13) and
Debian testing (Orthanc 1.13.0, orthanc-python 7.1, Python 3.14: the orthancteam image's),
each in a throw-away chroot (tests/platforms.py). In each: the README's first command from a
fresh copy of the project, its quick start against the Orthanc it started, then the README's
test command on the integration tests of every exchange and the side-by-side parity tests,
against that release's own Orthanc; on Debian testing, the image's install script too.

Minutes of apt, pip and Orthanc: they run in the background from the moment the suite has
collected its tests (conftest.py), beside the rest of it; these tests wait for their outcome.
COERCION_PLATFORMS names the releases (all by default; "none" for a quicker local run)."""

from __future__ import annotations

import os

import pytest

from platforms import CHOSEN, RELEASES, RUNS, STEPS, available


def releases(step: str):
    for release in RELEASES:
        marks = []
        if release not in CHOSEN:
            marks = [pytest.mark.skip(reason=f"COERCION_PLATFORMS does not name {release}")]
        elif step not in STEPS[release]:
            marks = [pytest.mark.skip(reason=f"not a step of {release}")]
        yield pytest.param(release, marks=marks, id=release)


def outcome(release: str, step: str):
    reason = available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert release in RUNS, "conftest.py starts the platform runs once the tests are collected"
    return RUNS[release].wait(step)


@pytest.mark.parametrize("release", list(releases("first-command")))
def test_the_readmes_first_command_and_its_quick_start(release):
    result = outcome(release, "first-command")
    assert result.ok, result.message


@pytest.mark.parametrize("release", list(releases("integration")))
def test_the_integration_tests_pass_against_its_orthanc(release):
    result = outcome(release, "integration")
    assert result.ok, result.message


@pytest.mark.parametrize("release", list(releases("image")))
def test_the_images_install_script_on_the_images_orthanc(release):
    result = outcome(release, "image")
    assert result.ok, result.message
