"""musicrec: an end-to-end TensorFlow/Keras music recommendation pipeline.

The source tree keeps the design card's top-level folders (``pipeline/``,
``components/``, ``models/``, ``serving/``) but installs them under the
``musicrec`` namespace so that generic names such as ``models`` never land at
the top of site-packages.
"""
from setuptools import setup

# One pip call installs all of these together: a later lone install can lift
# numpy or protobuf past what TensorFlow 2.17 accepts.
INSTALL_REQUIRES = [
    "tensorflow==2.17.1",
    "tensorflow-io==0.37.1",
    "tensorflow-serving-api==2.17.1",
    "tensorflow-hub==0.16.1",
    # tensorflow_hub (imported by Beam's TensorFlow RunInference handler) calls
    # pkg_resources, which setuptools 81 and later no longer ship.
    "setuptools>=70,<81",
    "keras>=3.4,<3.7",
    "apache-beam[tfrecord]==2.77.0",
    # Beam's TFRecord writer falls back to a slow pure-Python CRC without it.
    "google-crc32c>=1.5,<2",
    "librosa==0.11.0",
    "soundfile>=0.12,<0.15",
    "soxr>=0.5,<1.2",
    # models/features.py calls scipy.fft directly (single-precision STFT); librosa needs it too.
    "scipy>=1.11,<1.18",
    "numpy>=1.26,<2",
    "protobuf>=4.25,<5",
    "grpcio>=1.60,<2",
    "ml-metadata==1.17.1",
    "pyyaml>=6,<7",
    # Classical genre baseline (logistic regression) and the evaluation plots.
    "scikit-learn>=1.5,<2",
    "matplotlib>=3.8,<3.11",
    # Catalogue-tagging summaries an analyst opens in pandas; pandas 3 needs numpy 2.
    "pandas>=2.1,<3",
]

TEST_REQUIRES = [
    "pytest>=8,<10",
    "pytest-timeout>=2.3,<3",
    "ruff==0.8.6",
]

PACKAGES = {
    "musicrec": "musicrec",
    "musicrec.pipeline": "pipeline",
    "musicrec.components": "components",
    "musicrec.models": "models",
    "musicrec.models.genre": "models/genre",
    "musicrec.models.next_track": "models/next_track",
    "musicrec.serving": "serving",
}

setup(
    name="musicrec",
    version="0.1.0",
    description="End-to-end TensorFlow/Keras music recommendation pipeline",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["musicrec=musicrec.cli:main"]},
)
