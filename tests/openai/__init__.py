"""This package provides the unit tests of relay's OpenAI translation layer (relay.openai), pure and offline."""
