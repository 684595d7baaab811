"""Low-dose simulation as seeded ``nn.Module``s: the study's image method and projection physics."""
