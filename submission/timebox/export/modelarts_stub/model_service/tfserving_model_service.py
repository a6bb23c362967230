"""A local stand-in for ModelArts' ``TfServingBaseService``: just the request flow, for tests.

Put ``timebox/export/modelarts_stub`` on ``sys.path`` to import an exported customize_service.py
outside ModelArts. Example::

    sys.path.insert(0, "submission/timebox/export/modelarts_stub")
    service = ImageClassifyService("model", "OUT/modelarts/model")
    service.inference({"input_img": {"a.jpg": open("a.jpg", "rb")}})   # {"result": "..."}
"""


class TfServingBaseService:
    """ModelArts builds the service with (model_name, model_path) and answers a request with inference(data)."""

    def __init__(self, model_name, model_path):
        self.model_name, self.model_path = model_name, model_path

    def _preprocess(self, data):
        return data

    def _inference(self, data):
        return data

    def _postprocess(self, data):
        return data

    def inference(self, data):
        return self._postprocess(self._inference(self._preprocess(data)))
