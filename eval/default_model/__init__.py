"""The embedded default model: procedural clips and prompts (procedural.py), the prompt-following detector
(detector.py), the model's parts (components.py), training (train.py), evaluation (evaluate.py,
attention_error.py), and the trained weights in model/. MODEL_CARD.md describes all of it."""
