"""The EC2 login check (publish/sshkeys.check_login): sshUser/sshPort that differ from what cloud-init set up
at the instance's first boot are refused with the steps to move the host by hand."""

from __future__ import annotations

import pytest

from mailhost.publish import sshkeys
from mailhost.publish.sshkeys import LoginChanged, check_login


def test_the_login_of_the_first_boot_passes() -> None:
    check_login("admin@22", "admin", 22, "hosts[0]")
    check_login("deploy@2222", "deploy", 2222, "hosts[1]")


def test_an_instance_older_than_the_tag_was_set_up_as_the_image_does() -> None:
    check_login(None, "admin", 22, "hosts[0]")
    with pytest.raises(LoginChanged, match=r"sshd was last set up for admin@22 "):
        check_login(None, "admin", 2222, "hosts[0]")


def test_a_new_port_names_the_setting_the_lockout_and_the_steps() -> None:
    with pytest.raises(LoginChanged) as caught:
        check_login("admin@22", "admin", 2222, "hosts[3]")
    text = str(caught.value)
    assert text.startswith("hosts[3].sshUser/sshPort: ")
    assert "the security group would open only port 2222" in text and "whom the host lacks" not in text
    assert f"`Port 22` and `Port 2222` in {sshkeys.SSHD_DROPIN}" in text
    assert "set hosts[3].ec2.sshMovedByHand: true" in text and "set them back to admin and 22" in text


def test_a_new_user_names_the_user_to_create_and_not_the_port() -> None:
    with pytest.raises(LoginChanged) as caught:
        check_login("admin@2222", "deploy", 2222, "hosts[0]")
    text = str(caught.value)
    assert "the push would log in as 'deploy', whom the host lacks" in text and "Port " not in text
    assert "(1) on the host, create 'deploy'" in text and "(2) set hosts[0].ec2.sshMovedByHand" in text


@pytest.mark.parametrize("tag", ["admin@22\n", "admin@22 ", "Admin@22", "admin@0", "admin@65536", "admin@022",
                                 "admin", "@22", "a" * 33 + "@22", "admin@22@22", "x" * 5000, "\x1b[2Jadmin@22"])
def test_a_tag_that_is_not_user_at_port_is_refused_and_quoted_short(tag: str) -> None:
    with pytest.raises(LoginChanged) as caught:
        check_login(tag, "admin", 22, "hosts[0]")
    text = str(caught.value)
    assert f"tag {sshkeys.LOGIN_TAG} holds " in text and "\x1b" not in text and "\n" not in text
    assert len(text) < 400


def test_the_tag_value_is_what_the_check_reads() -> None:
    user, port = "deploy", 2200
    check_login(sshkeys.login(user, port), user, port, "hosts[0]")


def test_the_steps_by_hand_are_numbered_and_separated_for_reading() -> None:
    with pytest.raises(LoginChanged) as error:
        check_login("admin@22", "deploy", 2222, "hosts[0]")
    text = str(error.value)
    steps = text.split("or move the host by hand first: ", 1)[1]
    assert steps.startswith("(1) on the host, put `Port 22` and `Port 2222` in ")
    assert "`systemctl restart ssh`; (2) on the host, create 'deploy' with the admin key" in steps
    assert "; (3) set hosts[0].ec2.sshMovedByHand: true" in steps
