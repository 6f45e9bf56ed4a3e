"""Build hook for the optional compiled node storage (store/_nodebase.c).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler or Python
headers are present the build goes on without it and the pure Python NodeBase is used
(store/nodebase.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyxenstored.store._nodebase",
            ["src/pyxenstored/store/_nodebase.c"],
            optional=True,
        )
    ]
)
