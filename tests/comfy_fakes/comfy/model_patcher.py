"""Test stand-in for comfy.model_patcher.ModelPatcher: sets `.device` the way the real one does."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        elif self.model.device is None:
            self.model.device = offload_device
        self.model.device = offload_device  # real load()/detach() assign it too
        self.load_device, self.offload_device = load_device, offload_device
        self.size = sum(p.numel() * p.element_size() for p in model.parameters())
