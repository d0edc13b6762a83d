"""The files OPT Desktop ships: icons, the launcher template, the MIME XML, the demo model.

Not code: this file only makes the folder a package, so that the build installs it as
opt_desktop.resources and importlib.resources finds it (opt_desktop/assets.py reads it).
"""
