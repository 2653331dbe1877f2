"""ecgjax: classify photographed or scanned 12-lead ECG printouts with JAX and Flax."""

from setuptools import find_packages, setup

# A set known to install and work together on Python 3.11 (CPU); on GPU/TPU replace jax/jaxlib
# with the matching `jax[cuda12]` / `jax[tpu]` of the same version.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "grain==0.2.18",
    "numpy>=2.4,<2.5",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    "absl-py==2.5.1",
    "pillow==13.0.0",
    "importlib_resources==7.1.0",  # tfds needs it but does not declare it.
    "matplotlib==3.11.2",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    # Only because clu.metric_writers and periodic_actions import them; the Keras weight import and
    # its tests use the Keras that tensorflow-cpu brings.
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "keras==3.15.1",
]

setup(
    name="ecgjax",
    version="0.1.0",
    description="Classify photographed or scanned 12-lead ECG printouts with JAX and Flax.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["ecgjax", "ecgjax.*", "configs"]),
    include_package_data=True,
    package_data={"ecgjax.kernels": ["*.cc"]},  # compiled on first use (ecgjax/kernels/conv.py)
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "dill==0.4.1"]},
    entry_points={
        "console_scripts": [
            "ecgjax-train=ecgjax.main:run",
            "ecgjax-predict=ecgjax.predict:run",
        ],
    },
)
