"""A local stand-in for the ModelArts judge's ``model_service`` package (see tfserving_model_service)."""
