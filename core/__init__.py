"""Transfer Studio engine: ingest, backbones, training, evaluation and export.

This package never imports streamlit. The app's pages and the headless CLI
(``python -m core``) both call the functions defined here.
"""

__version__ = "0.1.0"
