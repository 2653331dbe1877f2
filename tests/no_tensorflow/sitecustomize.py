# On PYTHONPATH, makes TensorFlow and Keras look uninstalled: a base install of ecgjax (tests/test_main.py).
import importlib.machinery as m
_orig = m.PathFinder.find_spec.__func__
def _find_spec(cls, name, path=None, target=None):
    top = name.split(".")[0]
    if top in ("tensorflow", "keras", "tf_keras"):
        return None
    return _orig(cls, name, path, target)
m.PathFinder.find_spec = classmethod(_find_spec)
