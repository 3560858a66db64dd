"""The web app's files (``static/``), served at ``/`` by ``matcher serve --http-address``.

Package data only: plain ES modules, styles and pages, no build step, nothing from another
origin. The Python side is ``matcher.http``.
"""
