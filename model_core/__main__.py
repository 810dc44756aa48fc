import atexit
import os
import sys

from .cli import main

code = main()
if sys.getprofile() is None and sys.gettrace() is None:
    # Leave without the interpreter's teardown of torch, timm and everything they import
    # (0.7-1 s of every run): the outputs are closed and in place by now, and the exit
    # handlers (logging's flush among them) still run. Not under a profiler or a coverage
    # tracer, which write their results after this module returns.
    atexit._run_exitfuncs()
    sys.stdout.flush()   # after the handlers: what they print must not be lost either
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
