"""Fine-tuning editors: the chosen weights trained on the edit requests (`ft.py`)."""
