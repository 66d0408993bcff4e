import sys

from .cli import main
from .cpu_allocator import keep_freed_memory

keep_freed_memory()     # freed activations stay in the process: fewer page faults per frame (its docstring)
sys.exit(main())
