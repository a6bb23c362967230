"""Exports in the judges' own formats: ``flink`` (Tianchi/Flink 2019 SavedModel) and ``modelarts``
(Huawei ModelArts 2019 model/ folder), each rewritten atomically from a timebox model folder.

Example::

    from timebox.export.flink import export_flink
    export_flink(Path("OUT/model"), Path(os.environ["MODEL_INFERENCE_PATH"]))
"""
