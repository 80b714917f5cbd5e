"""The backbone that turns images into features: ResNet + ArcFace, its training, feature
extraction, identification and verification scores."""
