"""Prompt conditioning: the Llama stream starts with the prompt after the template crop."""

from __future__ import annotations

import torch

from fpk.model import conditioning as cond


def test_prompt_tokens_follow_the_template_crop_whatever_the_padding_side(tiny_saved):
    """HunyuanVideo crops the template's leading tokens; that only lands on the prompt with
    right padding. A tokenizer configured to pad left (the tiny model's once did: the prompt
    then sat behind ~250 template tokens and the model learned to ignore it) must give the
    same embeddings."""
    _, comps, _ = tiny_saved

    class C:  # the components encode_prompt reads
        tokenizer, text_encoder = comps["tokenizer"], comps["text_encoder"]
        tokenizer_2, text_encoder_2 = comps["tokenizer_2"], comps["text_encoder_2"]

    text = "the red square moves to the top left corner and stops"
    right = cond.encode_prompt(C, text, "cpu", torch.float32)
    crop = cond.template_crop(C.tokenizer)
    full = len(C.tokenizer(cond.prompt_template()["template"].format(text)).input_ids)
    assert right.mask.all() and right.embeds.shape[1] == full - crop
    ids = C.tokenizer(cond.prompt_template()["template"].format(text)).input_ids
    assert C.tokenizer.decode(ids[crop:]).startswith(text)  # the crop ends at the prompt
    C.tokenizer.padding_side = "left"
    try:
        left = cond.encode_prompt(C, text, "cpu", torch.float32)
    finally:
        C.tokenizer.padding_side = "right"
    torch.testing.assert_close(left.embeds, right.embeds)
    other = cond.encode_prompt(C, text.replace("left", "right"), "cpu", torch.float32)
    assert (other.embeds - right.embeds).norm() > 0
