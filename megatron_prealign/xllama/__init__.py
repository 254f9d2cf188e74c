"""x-LLaMA beyond instruction tuning itself: the translation-data scaling law and data allocation
under a budget (``scaling_law``), and the synthetic languages of the miniature (``synthetic``)."""
