"""The project's promises about itself: the quickstart commands and CI stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.DOTALL)


def test_quickstart_has_exactly_two_commands_main_job_and_tests():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert "pytest" in commands[1] and "pytest" not in commands[0]


def test_ci_runs_the_readme_test_command():
    assert quickstart_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_main_job_config_exists():
    config = re.search(r"ntm-rl train (\S+\.yaml)", quickstart_commands()[0]).group(1)
    assert (ROOT / config).is_file()
