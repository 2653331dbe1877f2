"""ecgjax: classify photographed or scanned 12-lead ECG printouts with JAX and Flax."""

from setuptools import find_packages, setup

# Version ranges the code is tested against: each lower bound is the oldest version tested (the
# exact set is requirements-lock.txt, which the scripts and CI install; jax 0.11.2, flax 0.12.10,
# orbax-checkpoint 0.12.4 and numpy 2.5.2 also ran on a CUDA node with Python 3.12). No upper
# bounds: none is known to break. TensorFlow is not needed to train, evaluate, predict or explain;
# it comes with the `tensorboard` extra (clu's TensorBoard writer) and the `keras` extra (weight
# import from Keras files).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.4",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8.6",
    "grain>=0.2.18",
    "numpy>=2.4",
    "ml-collections>=1.1.0",
    "clu>=0.0.12",
    "absl-py>=2.5.1",
    "pillow>=13.0.0",
    "importlib_resources>=7.1.0",  # tfds needs it but does not declare it.
    "matplotlib>=3.11.2",
    "tqdm>=4.67.1",  # The progress bar within an epoch, on a terminal.
    "scikit-learn>=1.9.1",
    "scipy>=1.17.1",
]

EXTRAS_REQUIRE = {
    # Accelerators: the jax build for them (pip install -e ".[cuda12]").
    "cuda12": ["jax[cuda12]>=0.10.2"],
    "cuda13": ["jax[cuda13]>=0.10.2"],
    "tpu": ["jax[tpu]>=0.10.2"],
    # TensorBoard summaries through clu's writer (without it, metrics go to the log).
    "tensorboard": ["tensorflow-cpu>=2.21.0", "tensorboard>=2.21.0"],
    # ecgjax.convert_keras (Keras files -> a run directory) and its tests, and
    # experiments/benchmark.py's Keras side.
    "keras": ["tensorflow-cpu>=2.21.0", "keras>=3.15.1"],
    # WFDB records from `python -m ecgjax.digitize --wfdb` (PhysioNet's reader and writer).
    "wfdb": ["wfdb>=4.3.1"],
    # The test suite: the extras above, since it tests them too.
    "test": ["pytest>=9.2.0", "pytest-xdist>=3.8.0", "dill>=0.4.1", "tensorflow-cpu>=2.21.0",
             "tensorboard>=2.21.0", "keras>=3.15.1", "wfdb>=4.3.1"],
}

setup(
    name="ecgjax",
    version="0.1.0",
    description="Classify photographed or scanned 12-lead ECG printouts with JAX and Flax.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["ecgjax", "ecgjax.*", "configs"]),
    include_package_data=True,
    package_data={"ecgjax.kernels": ["*.cc"]},  # compiled on first use (ecgjax/kernels/conv.py)
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    entry_points={
        "console_scripts": [
            "ecgjax-train=ecgjax.main:run",
            "ecgjax-predict=ecgjax.predict:run",
            "ecgjax-evaluate=ecgjax.evaluate:run",
            "ecgjax-convert-keras=ecgjax.convert_keras:run",
        ],
    },
)
