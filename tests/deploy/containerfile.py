"""The Containerfile as BuildKit's own parser reads it, as JSON on stdout.

The `dockerfile` package wraps moby/buildkit's parser: a file it refuses would
not build. Each instruction: {"cmd", "value", "flags"}.
"""

import json
import sys

import dockerfile

print(json.dumps([{"cmd": c.cmd, "value": list(c.value), "flags": list(c.flags)} for c in dockerfile.parse_file(sys.argv[1])]))
