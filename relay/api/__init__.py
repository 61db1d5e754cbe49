"""This package provides relay's blueprints, thin views over relay.pipeline: Google's routes (models,
cachedContents, files and uploads, batches, media operations, the Live WebSocket), the OpenAI door,
operations endpoints and the admin views; plus what every request goes through (lifecycle, routing)."""
