"""`python -m localllm.cli`: the same as the `localllm` command."""

import sys

from localllm.cli import main

sys.exit(main())
