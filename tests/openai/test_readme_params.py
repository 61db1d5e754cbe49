"""The README's OpenAI parameter tables are the ones relay/openai/params.py renders: they cannot drift apart."""

from relay.openai import params
from tests.support import REPO_ROOT


def test_the_readme_holds_the_parameter_tables_params_py_renders():
    readme = (REPO_ROOT / "README.md").read_text()
    assert params.readme_tables() in readme, "run: python -c 'from relay.openai.params import readme_tables; " \
                                             "print(readme_tables())' and paste it into the README"


def test_every_parameter_is_in_the_tables():
    tables = params.readme_tables()
    names = [*params.CHAT_MAPPED_PARAMS, *params.CHAT_IGNORED_PARAMS, *params.CHAT_REJECTED_PARAMS,
             *params.EMBEDDINGS_MAPPED_PARAMS, *params.EMBEDDINGS_IGNORED_PARAMS, *params.EMBEDDINGS_REJECTED_PARAMS]
    assert all(f"| `{name}` |" in tables for name in names)
