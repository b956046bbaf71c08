import longvid


def test_import():
    assert longvid.LongvidError
