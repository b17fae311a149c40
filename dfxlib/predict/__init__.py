"""A trained model on your own images (`dfx predict`, notebook 07): loading, streaming prediction, the files it
reads and the CSV it writes, and Grad-CAM.

Modules: `inference`, `files`, `gradcam`.
"""
