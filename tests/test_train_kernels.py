"""Training kernels: the same function inside the block, the model exactly as it was after it."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from prompt_expander.train.kernels import training_kernels


def tiny_model():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0, embd_pdrop=0,
                     attn_pdrop=0)
    return GPT2LMHeadModel(cfg).eval()


def snapshot(model):
    return [type(block.mlp.act) for block in model.transformer.h], getattr(model.config, "_attn_implementation", None)


@torch.no_grad()
def test_same_logits_on_the_faster_kernels_and_the_model_restored_after():
    model = tiny_model()
    ids = torch.tensor([[5, 9, 2, 77, 31, 4, 4, 60]])
    before, plain = snapshot(model), model(ids).logits
    with training_kernels(model, "cpu"):
        assert all(isinstance(block.mlp.act, torch.nn.GELU) for block in model.transformer.h)
        if before[1] == "sdpa":  # transformers 5 (4.x fixes the attention class when the model is built)
            assert model.config._attn_implementation == "eager"
        fast = model(ids).logits
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert snapshot(model) == before
    assert "_attn_implementation" not in model.config.to_dict()  # nothing of the swap reaches a saved config


def test_attention_is_left_alone_on_a_gpu():
    model = tiny_model()
    attn = getattr(model.config, "_attn_implementation", None)
    with training_kernels(model, "cuda"):
        assert getattr(model.config, "_attn_implementation", None) == attn
        assert isinstance(model.transformer.h[0].mlp.act, torch.nn.GELU)


def test_the_model_is_restored_when_training_fails():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(RuntimeError):
        with training_kernels(model, "cpu"):
            raise RuntimeError("out of memory")
    assert snapshot(model) == before


@torch.no_grad()
def test_the_padding_check_is_skipped_while_training_and_back_after(monkeypatch):
    from transformers import PreTrainedModel
    if not hasattr(PreTrainedModel, "warn_if_padding_and_no_attention_mask"):
        pytest.skip("this transformers has no padding check")
    calls = []
    monkeypatch.setattr(PreTrainedModel, "warn_if_padding_and_no_attention_mask",
                        lambda self, input_ids, attention_mask: calls.append(type(self).__name__))
    model = tiny_model()
    model.config.pad_token_id = 0
    padded = torch.tensor([[5, 9, 2, 77, 0, 0]])  # a packed row ends in pads, which the loss leaves out
    with training_kernels(model, "cpu"):
        model(padded)
    assert calls == []
    assert not any("warn_if_padding_and_no_attention_mask" in vars(m) for m in model.modules())
    model(padded)
    assert calls == ["GPT2Model"]
