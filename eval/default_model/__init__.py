"""The embedded default model: procedural clips and prompts (procedural.py), the prompt-following detector
(detector.py), the model's parts (components.py), training (train.py), evaluation (evaluate.py, conditioning.py,
attention_error.py), and the trained weights in model/. MODEL_CARD.md describes the model; its training records
are in results/default_model/."""
