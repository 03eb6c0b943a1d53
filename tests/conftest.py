"""Settings for the whole test suite."""

import os
import tempfile

# ``tstream run`` records every session in the default store, in the XDG data directory:
# point that (and the store variable) at a directory of the test run's own, for this process
# and every process the tests start, so that no test writes into the user's home.
_DATA_HOME = tempfile.mkdtemp(prefix="tstream-tests-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
os.environ.pop("TSTREAM_STORE", None)
