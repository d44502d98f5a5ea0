"""Lightning callbacks, a module per concern (``training.py``, ``images.py``). Add one as a
class in a module here plus ``conf/callbacks/<name>.yaml`` naming it."""
