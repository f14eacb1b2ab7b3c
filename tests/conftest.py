"""Session-wide test settings."""
import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free each test module's compiled programs when it ends. Every CPU executable holds memory
    mappings (the kernel allows 65,530 per process); with all of the suite's programs alive in
    one process, a compile late in the run failed and the C++ exception reporting it crashed
    the process in libgcc's unwinder."""
    yield
    jax.clear_caches()
