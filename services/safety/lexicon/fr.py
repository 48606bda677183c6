"""The French words of the injection frames (see `services.safety.lexicon`)."""

from __future__ import annotations

LEXICON: dict[str, str] = {
    "override_verbs": r"ignore|ignorez|ignorer|oublie|oubliez|oublier|ne (?:tiens|tenez) "
    r"(?:plus|pas) compte (?:de|des|du)|fais abstraction (?:de|des)|faites abstraction (?:de|"
    r"des)|écarte|contourne|arrête de suivre|arrête d'obéir à|n'obéis plus à|ne suis plus|"
    r"désobéis à|passe outre(?: à)?|laisse tomber",
    "everything_told": r"tout (?:ce qu'on t'a (?:dit|appris|demandé|ordonné)|ce que l'on t'a "
    r"(?:dit|appris)|ce qui précède|ce qui est au dessus)",
    "strong_nouns": r"instructions|instruction|consignes|consigne|directives|directive|"
    r"programmation|prompt (?:du )?système|message système|lignes directrices",
    "weak_nouns": r"règles|restrictions|filtres|politiques|contraintes|ordres|principes|éthique|"
    r"morale|paramètres",
    "makers": r"créateurs|développeurs|concepteurs|programmeurs",
    "fillers": r"toutes|tous|toute|tout|les|la|le|l'|tes|ta|ton|vos|votre|mes|mon|ma|nos|notre|"
    r"ces|des|de|d'|autres|précédentes|antérieures",
    "system_det": r"toutes|tous|tes|ton|ta|vos|votre|précédentes|précédents|antérieures|"
    r"antérieurs|initiales|initiaux|originales|originaux|du système|de sécurité|internes|"
    r"cachées",
    "possessive_det": r"tes|ton|ta|vos|votre|précédentes|précédents|antérieures|antérieurs|"
    r"initiales|initiaux|originales|originaux|du système|de sécurité|internes|cachées",
    "second_person": r"tes|ton|ta|vos|votre",
    "system_after": r"précédentes|précédents|antérieures|antérieurs|initiales|initiaux|"
    r"originales|originaux|du système|de sécurité|internes|cachées|secrètes",
    "speaker_det": r"mes|mon|ma|nos|notre",
    "speaker_clause": r"que je (?:t'ai|vous ai|t'avais|vous avais) (?:\w+ ){0,2}?(?:données|"
    r"donnés|donné|donnée|dites|dit|fixées|fixés|envoyées|écrites|demandées|expliquées|"
    r"indiquées)",
    "ai_owned": r"qu'on t'a (?:\w+ )?(?:données|donnés|donné|imposées|imposés|fixées|apprises|"
    r"programmées)|que tes (?:créateurs|développeurs|concepteurs|programmeurs) t'ont (?:données|"
    r"donnés|donné|imposées|fixées)|(?:tes|les) (?:créateurs|développeurs|concepteurs) t'ont",
    "object_link": r"sur|pour|de|du|des|d'|concernant|à propos de|au sujet de|à|au|dans",
    "first_person": r"mon|ma|mes|notre|nos",
    "object_det": r"la|le|les|l'|un|une|ce|cette|ces|son|sa|ses",
    "ai_terms": r"toi|moi|nous|maintenant|système|sécurité|conversation|chat|session|assistant|"
    r"ia|bot|modèle|compagnon|réponses?|messages?|tâche|texte|question|créateurs|développeurs|"
    r"tous|toujours|aujourd'hui|moment|reste|avenir",
    "invalidated": r"ne s'appliquent plus|ne comptent plus|ne sont plus (?:valables|valides|"
    r"actives|en vigueur)|(?:sont|ont été) (?:désormais |maintenant )?(?:annulées|annulés|"
    r"suspendues|suspendus|levées|levés|caduques|désactivées|désactivés|supprimées|supprimés|"
    r"abolies|nulles)",
    "no_longer_follow": r"tu ne (?:suis|respectes|obéis|appliques) plus|tu n'as plus (?:à|"
    r"besoin de) (?:suivre|respecter|obéir)|(?:arrête|cesse) de (?:suivre|respecter)|"
    r"(?:arrête|cesse) d'obéir|n'obéis plus",
    "obey_me": r"obéis(?: moi| seulement à moi| uniquement à moi| qu'à moi)|tu (?:m'obéis|obéis)"
    r" (?:seulement |uniquement )?à moi|tu n'obéis qu'à moi|suis (?:seulement |uniquement )?"
    r"mes (?:ordres|instructions|consignes)",
    "new_instructions": r"(?:nouvelles|nouveaux) (?:instructions|consignes|règles|directives|"
    r"ordres)",
    "reveal": r"montre|affiche|donne|répète|révèle|écris|copie|dis|liste|résume|traduis|"
    r"explique|quelles sont|quel est|quelle est|quelles|quels sont|c'est quoi|imprime|récite|"
    r"partage",
    "secret_target": r"(?:ton|ta|tes|vos|votre) (?:prompt (?:du )?système|prompt|instructions|"
    r"consignes|message système|programmation|configuration|directives)|(?:le|la|les) (?:prompt|"
    r"instructions|consignes|directives|message) (?:initiales|initiaux|cachées|cachés|secrètes|"
    r"originales|internes|système|du système|de départ|d'origine)|(?:le )?prompt (?:du )?"
    r"système|instructions (?:initiales|cachées|secrètes|originales|internes)",
    "secret_nouns": r"prompt|instructions|consignes|directives|règles",
    "weak_secret_target": r"(?:tes|vos) (?:règles|restrictions|limites|politiques)",
    "verbatim": r"mot pour mot|mot à mot|texto|à la lettre|textuellement|intégralement",
    "told_before": r"ce qu'on t'a dit avant|tout ce qui (?:est|se trouve) au dessus|les messages "
    r"que je ne (?:peux|vois) pas|le premier message de (?:cette|la) conversation|avant que je "
    r"(?:commence|parle)",
    "persona": r"tu es (?:maintenant|désormais|à présent|dorénavant)|à partir de maintenant|"
    r"désormais|dorénavant|fais comme si|fais semblant|faites semblant|agis comme|agis en tant "
    r"que|comporte toi comme|tu n'es plus|imagine que tu es|joue le rôle|reste dans ton "
    r"personnage|tu es une? (?:ia|assistant|bot|modèle)|une ia|un assistant|tu n'as (?:aucune|"
    r"plus de|pas de)|n'avais aucune",
    "unrestricted": r"sans (?:aucune |aucun )?(?:restrictions?|règles?|filtres?|morale|éthique|"
    r"censure|limites morales|principes)|aucune (?:règle|restriction|limite morale)|libre de "
    r"toute (?:restriction|règle|contrainte)|non censuré\w*|non filtré\w*",
    "mode_command": r"(?:active|activez|passe en|passez en|entre en|bascule en|mets toi en|"
    r"lance le) (?:le )?mode (?:développeur|dieu|dan|jailbreak|administrateur|admin|debug|"
    r"sans restriction\w*|sans filtre\w*|libre)",
    "mode_state": r"tu es (?:maintenant |désormais )?en mode (?:développeur|dieu|dan|jailbreak)|"
    r"mode (?:développeur|dieu|dan|jailbreak) (?:activé|actif|enclenché)",
    "others": r"(?:les |des |d')?autres utilisateurs|un autre utilisateur|une autre personne|"
    r"(?:les |des |d')?autres personnes|(?:d'|les )autres gens|quelqu'un d'autre|"
    r"tous les utilisateurs|tous les comptes|tout le monde|tes autres utilisateurs|"
    r"chaque utilisateur|"
    r"l'utilisateur précédent|la personne qui t'a (?:utilisé|parlé) avant|(?:l')?utilisateur "
    r"(?:numéro |n |id )?\d+",
    "private_nouns": r"souvenirs|notes|mémoires|mémoire|conversations|conversation|historique"
    r"(?: des conversations| de chat| des discussions)?|messages|données|profil|profils|secrets|"
    r"échanges|discussions|journaux|noms?",
    "private_link": r"(?:de |des |du |d')(?:la |les |l')?",
    "addressed": r"salut|hé|ok|alors|et|maintenant|puis|écoute|regarde|s'il te plaît|stp|"
    r"peux tu|pourrais tu|je veux que tu|vas y|moi",
    "request_any": r"je veux (?:voir|lire|savoir|entendre)|laisse moi (?:voir|lire)|qu'y a t il "
    r"dans|qu'est ce qu'il y a dans",
    "speaker_mention": r"que (?:je )?(?:t'ai )?(?:mentionnée?s?|connais|rencontrée?s?|invitée?s?)",
    "told_by_me": r"\bje (?:t'ai|vous ai)\b",
    "tool_lead": r"(?:utilise|sers toi de) (?:tes|les) (?:outils|fonctions) pour",
    "access": r"(?:donne|accorde)(?: moi)? (?:l'|un )?accès (?:à|au|aux)|accès (?:à|au|aux)",
    "request": r"lis|montre|affiche|donne|dis moi|dis|liste|révèle|exporte|envoie|partage|ouvre|"
    r"charge|cherche|raconte|accède à|récupère",
    "destroy": r"efface|supprime|oublie|vide|réinitialise|détruis|élimine|effacer|supprimer|"
    r"oublier|vider|réinitialiser|détruire|éliminer",
    "told_you": r"(?:t'|vous )(?:ont|a|avaient|avait) (?:\w+ )?(?:dit|dits|dite|raconté|racontés|"
    r"confié|confiés|confiées|confiée|partagé|partagés|écrit|révélé|révélés|demandé)",
    "content_seek": r"qu'est ce que|quoi|quels|quelles|quel|raconte|dis moi|lis|montre|tout|"
    r"quelque chose|secrets|exemples|noms|détails|ce que",
    "tool_verbs": r"exécute|exécutez|utilise|utilisez|lance|appelle|applique|déclenche",
    "tool_nouns": r"outil|fonction|commande|action|tool|forget|remember|recall",
    "for_link": r"pour|sur|à|contre|chez",
    "list_users": r"(?:liste|énumère|nomme|donne moi|montre moi) (?:tous )?(?:les |tes )?"
    r"(?:autres )?utilisateurs|combien d'utilisateurs as tu",
    "who_else": r"avec qui d'autre (?:parles|discutes) tu|à qui d'autre parles tu",
    "maker_claim": r"je suis (?:ton|ta|votre) (?:développeu\w*|créateu\w*|créatrice|"
    r"administrat\w*|programmeu\w*|propriétaire|maître|patron\w*|concepteu\w*)|la personne qui "
    r"t'a (?:créé|créée|construit|programmé|entraîné|fait)",
    "admin_claim": r"je suis (?:le |la |un |une |l')(?:administrat\w*|admin|développeu\w*|"
    r"opérat\w*)",
    "privilege_request": r"donne moi (?:un )?(?:accès (?:complet|total|administrateur|admin|"
    r"root)|tous les droits|le contrôle total|les droits (?:d'administrateur|admin))",
    "disable_safety": r"(?:désactive|désactivez|enlève|retire|supprime|contourne|coupe) (?:tes|"
    r"les|ton|le|tous les|toutes les) (?:filtres?(?: de sécurité)?|restrictions|protections|"
    r"contrôles(?: de sécurité)?|censure|modération|garde fous)",
    "account_switch": r"(?:passe|bascule|va|connecte toi|connecte moi) (?:sur|vers|dans|au|à) "
    r"(?:le )?compte (?:d'un|d'une|de quelqu'un|de l'utilisateur|d'autre)|connecte moi "
    r"(?:en tant que|comme) \S+",
    "id_context": r"utilisateurs?|comptes?|profils?|compagnons?|sessions?|souvenirs|données|"
    r"conversations|historique",
    "role_labels": r"système|assistant|développeur|administrateur",
    "directives": r"\btu (?:es|dois|vas|n'as)\b|\b(?:obéis|obéissez|ignore|ignorez|oublie|"
    r"réponds|révèle|désactive|active|montre)\b|\bl'utilisateur (?:est|a|peut|doit)\b|\btes "
    r"(?:règles|instructions|consignes)\b",
}
