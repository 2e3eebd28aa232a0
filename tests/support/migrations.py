"""The text of an Alembic migration the tests add to a copy of the kit (a deploy's release, a
scratch project): one revision on top of `down_revision`, with its upgrade and downgrade bodies."""

from __future__ import annotations


def migration_source(
    doc: str,
    revision: str,
    down_revision: str,
    upgrade: str,
    downgrade: str = "pass",
    imports: tuple[str, ...] = ("from alembic import op",),
) -> str:
    """upgrade/downgrade: statements, each line indented by the caller's four spaces or not."""

    def body(code: str) -> str:
        return "\n".join(
            line if line.startswith("    ") else f"    {line}" for line in code.split("\n")
        )

    return (
        f'"""{doc}"""\n\n'
        + "\n".join(imports)
        + f'\n\nrevision = "{revision}"\ndown_revision = "{down_revision}"\n'
        + "branch_labels = None\ndepends_on = None\n\n\n"
        + f"def upgrade() -> None:\n{body(upgrade)}\n\n\n"
        + f"def downgrade() -> None:\n{body(downgrade)}\n"
    )
