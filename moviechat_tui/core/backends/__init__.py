"""Generation backends: ct2 (the CTranslate2 copy of the model, the default on CPU)."""
