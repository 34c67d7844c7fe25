"""Packages the project so remote Beam workers (Dataflow, Flink, Spark) and Kubeflow images
import the same code: pass `--setup_file=./setup.py` in beam_pipeline_args."""
import setuptools

setuptools.setup(
    name="recsys-pipeline",
    version="0.1.0",
    packages=setuptools.find_packages(include=["pipeline*", "transform*", "trainer*", "agents*", "serving*", "kubeflow*"]),
    package_data={"pipeline": ["schema/*.pbtxt"]},
    python_requires=">=3.9",
)
