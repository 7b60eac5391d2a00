//! The typed fields of an inbound message, beside its text: who sent it
//! (WhatsApp's profile and business-scoped ids), a shared location, a pressed
//! button (WhatsApp quick replies, RCS suggestions), the message it replies
//! to, and the ad it came from (click-to-WhatsApp).
//!
//! Each is absent unless Twilio sent its parameters, and a parameter that
//! does not read as its type (a latitude that is no number) leaves the field
//! absent rather than refusing the message: every parameter stays in the
//! envelope's attributes, and Twilio adds parameters without notice.

use crate::ingress::envelope::Params;
use crate::platform::connector::types::{Button, Location, Profile, Referral};

/// The typed fields of one message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TypedFields {
    pub profile: Option<Profile>,
    pub location: Option<Location>,
    pub button: Option<Button>,
    pub reply_to: Option<String>,
    pub referral: Option<Referral>,
}

/// The typed fields `params` carry.
pub fn read(params: Params<'_>) -> TypedFields {
    TypedFields {
        profile: profile(params),
        location: location(params),
        button: button(params),
        reply_to: owned(params, "OriginalRepliedMessageSid"),
        referral: referral(params),
    }
}

fn owned(params: Params<'_>, name: &str) -> Option<String> {
    params.get(name).map(str::to_owned)
}

fn profile(params: Params<'_>) -> Option<Profile> {
    let profile = Profile {
        name: owned(params, "ProfileName"),
        external_user_id: owned(params, "ExternalUserId"),
        parent_external_user_id: owned(params, "ParentExternalUserId"),
        wa_id: owned(params, "WaId"),
        username: owned(params, "Username").or_else(|| owned(params, "ProfileUsername")),
    };
    let empty =
        Profile { name: None, external_user_id: None, parent_external_user_id: None, wa_id: None, username: None };
    (profile != empty).then_some(profile)
}

/// A location, from `Latitude` and `Longitude` (numbers within their
/// ranges) on a message whose `MessageType`, when given, is `location`.
fn location(params: Params<'_>) -> Option<Location> {
    if params.get("MessageType").is_some_and(|kind| !kind.eq_ignore_ascii_case("location")) {
        return None;
    }
    let degrees = |name: &str, bound: f64| {
        let value: f64 = params.get(name)?.trim().parse().ok()?;
        (value.is_finite() && value.abs() <= bound).then_some(value)
    };
    Some(Location {
        latitude: degrees("Latitude", 90.0)?,
        longitude: degrees("Longitude", 180.0)?,
        address: owned(params, "Address"),
        label: owned(params, "Label"),
    })
}

fn button(params: Params<'_>) -> Option<Button> {
    let button = Button { text: owned(params, "ButtonText"), payload: owned(params, "ButtonPayload") };
    (button.text.is_some() || button.payload.is_some()).then_some(button)
}

fn referral(params: Params<'_>) -> Option<Referral> {
    let referral = Referral {
        body: owned(params, "ReferralBody"),
        headline: owned(params, "ReferralHeadline"),
        source_id: owned(params, "ReferralSourceId"),
        source_type: owned(params, "ReferralSourceType"),
        source_url: owned(params, "ReferralSourceUrl"),
        media_url: owned(params, "ReferralMediaUrl"),
        ctwa_clid: owned(params, "ReferralCtwaClid"),
    };
    let any = [
        &referral.body,
        &referral.headline,
        &referral.source_id,
        &referral.source_type,
        &referral.source_url,
        &referral.media_url,
        &referral.ctwa_clid,
    ]
    .iter()
    .any(|field| field.is_some());
    any.then_some(referral)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::envelope::Param;

    fn read_from(list: &[(&str, &str)]) -> TypedFields {
        let params: Vec<Param<'_>> = list.iter().map(|&(k, v)| (k.into(), v.into())).collect();
        read(Params(&params))
    }

    #[test]
    fn a_plain_sms_has_none() {
        assert_eq!(read_from(&[("Body", "hi"), ("From", "+14155550100")]), TypedFields::default());
    }

    #[test]
    fn a_whatsapp_location_is_typed() {
        let fields = read_from(&[
            ("MessageType", "location"),
            ("Latitude", "37.7879277"),
            ("Longitude", "-122.4032951"),
            ("Address", "375 Beale St, San Francisco"),
            ("Label", "Twilio HQ"),
            ("ProfileName", "Ana"),
            ("WaId", "14155550100"),
        ]);
        let location = fields.location.unwrap();
        assert!((location.latitude - 37.787_927_7).abs() < 1e-9);
        assert!((location.longitude + 122.403_295_1).abs() < 1e-9);
        assert_eq!(location.label.as_deref(), Some("Twilio HQ"));
        let profile = fields.profile.unwrap();
        assert_eq!((profile.name.as_deref(), profile.wa_id.as_deref()), (Some("Ana"), Some("14155550100")));
    }

    #[test]
    fn coordinates_that_are_no_degrees_leave_the_location_out() {
        for (lat, lon) in [("north", "1"), ("91", "0"), ("0", "-180.5"), ("NaN", "0"), ("inf", "0"), ("", "1")] {
            let fields = read_from(&[("MessageType", "location"), ("Latitude", lat), ("Longitude", lon)]);
            assert_eq!(fields.location, None, "{lat} {lon}");
        }
        let text = read_from(&[("MessageType", "text"), ("Latitude", "1"), ("Longitude", "2")]);
        assert_eq!(text.location, None, "only a location message has one");
    }

    #[test]
    fn business_scoped_ids_buttons_replies_and_referrals() {
        let fields = read_from(&[
            ("From", "whatsapp:US.13491208655302741918"),
            ("ExternalUserId", "US.13491208655302741918"),
            ("ParentExternalUserId", "US.ENT.11815799212886844830"),
            ("Username", "ana.b"),
            ("ButtonText", "Yes"),
            ("ButtonPayload", "confirm-42"),
            ("OriginalRepliedMessageSid", "SM0123"),
            ("ReferralCtwaClid", "ARAkLkA8"),
            ("ReferralSourceType", "ad"),
        ]);
        let profile = fields.profile.unwrap();
        assert_eq!(profile.external_user_id.as_deref(), Some("US.13491208655302741918"));
        assert_eq!(profile.parent_external_user_id.as_deref(), Some("US.ENT.11815799212886844830"));
        assert_eq!(profile.username.as_deref(), Some("ana.b"));
        assert_eq!(profile.wa_id, None, "a business-scoped id has no number");
        assert_eq!(fields.button, Some(Button { text: Some("Yes".into()), payload: Some("confirm-42".into()) }));
        assert_eq!(fields.reply_to.as_deref(), Some("SM0123"));
        let referral = fields.referral.unwrap();
        assert_eq!((referral.ctwa_clid.as_deref(), referral.source_type.as_deref()), (Some("ARAkLkA8"), Some("ad")));
        assert_eq!(referral.body, None);
    }
}
