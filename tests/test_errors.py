from genlab.errors import CheckpointError, ConfigError, GenlabError, RunExists, warn


def test_config_error_is_one_line_naming_the_field_and_exits_2():
    err = ConfigError("optim.lr", "must be > 0, got -1")
    assert str(err) == "optim.lr: must be > 0, got -1" and err.field == "optim.lr"
    assert "\n" not in str(err)
    assert all(issubclass(e, GenlabError) and e.exit_code == 2
               for e in (ConfigError, CheckpointError, RunExists))  # fmt: skip


def test_warn_prints_one_prefixed_line_on_stderr(capsys):
    warn("taking over a stale lock")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "genlab: warning: taking over a stale lock\n"
