"""A fake StableDiffusionProcessing after setup_prompts(): what scripts see in process()."""


class FakeProcessing:
    def __init__(self, prompts, seeds, negatives=None, enable_hr=False, hr_prompts=None, batch_size=1):
        self.batch_size = batch_size
        self.n_iter = len(prompts) // batch_size
        self.all_prompts = list(prompts)
        self.all_seeds = list(seeds)
        self.all_negative_prompts = list(negatives or [""] * len(prompts))
        self.enable_hr = enable_hr
        if enable_hr:
            self.all_hr_prompts = list(hr_prompts or prompts)
            self.all_hr_negative_prompts = list(self.all_negative_prompts)
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]
        self.extra_generation_params = {}

    def infotext(self, index):
        """What create_infotext puts in image `index`'s parameters, as A1111 would parse it back."""
        params = {"Prompt": self.all_prompts[index], "Negative prompt": self.all_negative_prompts[index],
                  "Seed": self.all_seeds[index]}
        for k, v in self.extra_generation_params.items():
            params[k] = v[index] if isinstance(v, list) else v
        return params
