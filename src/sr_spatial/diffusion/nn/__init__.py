"""Network parts: histology encoder, disentangling network (CMAM), cross-attention, gene graph, UNet."""
