"""The tests import the installed fedmq_client (tests/python/run_tests.sh installs it into a
venv); this checks that it is not the source tree's by accident when run that way."""
import os

import fedmq_client


def pytest_report_header(config):
    return "fedmq_client from %s" % os.path.dirname(fedmq_client.__file__)


def pytest_configure(config):
    venv = os.environ.get("FM_PY_VENV")
    if venv:
        assert os.path.realpath(fedmq_client.__file__).startswith(os.path.realpath(venv)), \
            "fedmq_client imported from %s, not from the venv %s" % (fedmq_client.__file__, venv)
