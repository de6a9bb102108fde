"""eskit's web front ends: the HTML explorer (:mod:`eskit.web.explorer`).

Needs the ``web`` extra (``pip install 'eskit[web]'``).
"""

__all__: list[str] = []
