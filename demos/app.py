"""Launch the erasekit Gradio demo: ``python demos/app.py [--port 7860] [--model-dir DIR ...]``.

The same as ``erasekit demo``; the layout is in :mod:`erasekit.demo.app` and its logic in
:mod:`erasekit.demo.callbacks`.
"""

import sys

from erasekit.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
