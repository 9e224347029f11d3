"""The embedded LENS-tiny model: tokenizer, configs and the pre-training substitutes.

No pretrained weights exist for a model this small, so two *pre-training substitutes*
stand in for the pretraining of the real Qwen2.5-VL and SAM: supervised fine-tuning of
the tiny MLLM on the synthetic world's rationales and boxes (``pretrain_mllm``) and
training of the tiny SAM on the world's masks with box/point prompts (``pretrain_sam``).
The real LENS stage 1 and stage 2 then run on top (``build_embedded`` chains everything).
"""
