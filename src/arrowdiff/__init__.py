"""arrowdiff: text, code, images and speech from one shared diffusion score network.

``from arrowdiff import ArrowEngine`` is the public entry point.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing the package stays cheap and side-effect free
    if name == "ArrowEngine":
        from arrowdiff.engine import ArrowEngine

        return ArrowEngine
    raise AttributeError(name)


__all__ = ["ArrowEngine", "__version__"]
