"""Serving: trained models as plain-tensor programs (``torch.export``, AOTInductor) with quantized tables."""
