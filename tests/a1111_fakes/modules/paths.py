import os

models_path = os.environ.get("FAKE_WEBUI_MODELS", "/tmp/fake-webui-models")
